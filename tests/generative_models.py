"""Model folders of the echo language model (inferd.generation.echo) for the generation tests."""

from __future__ import annotations

from pathlib import Path


def write_echo_llm(root: Path, name: str, *, slots: int = 4, context: int = 512, delay_ms: float = 0.0,
                   fail_after: int = 0, max_tokens: int = 256, queue_size: int | None = None,
                   temperature: float = 0.0, top_p: float = 1.0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.echo").write_bytes(b"")
    queue = f"\n[queue]\nmax_size = {queue_size}\n" if queue_size else ""
    (folder / "model.toml").write_text(
        f"[generation]\ncontext = {context}\nslots = {slots}\nmax_tokens = {max_tokens}\n"
        f"temperature = {temperature}\ntop_p = {top_p}\n"
        f"\n[options]\ndelay_ms = {delay_ms}\nfail_after = {fail_after}\n{queue}", encoding="utf-8")
    return folder
