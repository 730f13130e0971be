"""``inferd models list --url``: a running server's models, loaded or not, with memory, load time and last use."""

from __future__ import annotations

import httpx

from demand_models import infer_body, write_counted
from server_process import ServerProcess


def test_models_list_of_a_running_server_shows_loaded_and_unloaded_models(cli, repo_root, tmp_path):
    write_counted(repo_root, "used", toml='memory_size = "3MiB"\n', delay=0.1)
    write_counted(repo_root, "idle")
    server = ServerProcess(repo_root, tmp_path / "serve.log", extra_args=["--model-control", "on-demand"])
    try:
        server.start()
        assert httpx.post(server.url + "/v2/models/used/infer", json=infer_body([1.0]), timeout=30).status_code == 200
        result = cli("models", "list", "--url", server.url)
        assert result.returncode == 0, result.stderr
        rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
                for line in result.stdout.splitlines() if "│" in line}
        assert rows["used"][1:4] == ["1", "READY", "3.0MiB"]
        assert rows["used"][4].endswith(" s")
        assert rows["used"][5].endswith("ago")
        assert rows["idle"][2] == "UNLOADED"
        assert rows["idle"][3:6] == ["-", "-", "-"]
    finally:
        assert server.stop() == 0, server.log()
