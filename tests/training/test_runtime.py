import subprocess
import sys

from graft.training.runtime import deterministic_algorithms

REPORT = ("import sys, torch; from graft.training.runtime import deterministic_algorithms; deterministic_algorithms(); "
          "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
          "'torch._dynamo' in sys.modules)")


def test_deterministic_mode_is_on_without_loading_the_compiler():
    out = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]  # on, warnings only, and torch._dynamo (2 s to import) never loaded


def test_with_the_compiler_loaded_its_setting_follows_too():
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = False
    deterministic_algorithms()
    assert inductor_config.deterministic and torch.are_deterministic_algorithms_enabled()
