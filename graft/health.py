"""Is a server up? One GET of its /health endpoint (MLflow and Prefect servers both serve one)."""

from __future__ import annotations


def why_unreachable(base_url: str, timeout: float = 5.0) -> str | None:
    """None when `base_url`/health answers, else why not (the error, as text)."""
    import urllib.request

    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except Exception as e:  # noqa: BLE001 - any failure means unreachable
        return str(e)
    return None
