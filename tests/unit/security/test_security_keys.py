"""Key records, their files and the ``inferd keys create`` command."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from inferd.security.keys import ApiKey, KeysError, append_key, hash_key, load_keys, load_keys_file, new_key
from inferd.security.scopes import Scope

DIGEST = hash_key("secret")


def test_new_keys_are_long_and_random():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 43 for k in keys)
    assert hash_key("secret") == hash_key(b"secret") == "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"


def test_toml_and_json_files(tmp_path: Path):
    toml = tmp_path / "keys.toml"
    toml.write_text(f'[[keys]]\nname = "ci"\nsha256 = "{DIGEST}"\nscopes = ["infer", "read"]\n')
    [key] = load_keys_file(toml)
    assert key.name == "ci"
    assert key.scopes == {Scope.INFER, Scope.READ}
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps([{"name": "ci", "sha256": DIGEST, "scopes": ["admin"]}]))
    assert load_keys_file(as_json)[0].scopes == {Scope.ADMIN}


@pytest.mark.parametrize(("text", "message"), [
    ('[[keys]]\nname = "ci"\nsha256 = "abc"\nscopes = ["infer"]\n', r"keys\[0\]: sha256: sha256 must be 64"),
    (f'[[keys]]\nname = "ci"\nsha256 = "{DIGEST}"\nscopes = ["write"]\n', r"keys\[0\]: scopes\.0: Input should be"),
    (f'[[keys]]\nname = "ci"\nsha256 = "{DIGEST}"\nscopes = []\n', r"keys\[0\]: scopes: give at least one scope"),
    (f'[[keys]]\nname = "ci"\nsha256 = "{DIGEST}"\n', r"keys\[0\]: scopes: Field required"),
    (f'[[keys]]\nname = "ci"\nsha256 = "{DIGEST}"\nscopes = ["read"]\nkey = "oops"\n', r"keys\[0\]: key: Extra"),
    ('[[keys]\n', r"not valid TOML"),
    ('keys = 3\n', r"expected a list of key records"),
    (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nscopes = ["read"]\n[[keys]]\nname = "a"\nsha256 = "{"0" * 64}"\n'
     'scopes = ["read"]\n', r"the name 'a' is used by more than one key"),
    (f'[[keys]]\nname = "a"\nsha256 = "{DIGEST}"\nscopes = ["read"]\n[[keys]]\nname = "b"\nsha256 = "{DIGEST}"\n'
     'scopes = ["read"]\n', r"key 'b' has the same sha256 as another key"),
])
def test_bad_files_name_file_and_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(KeysError, match=f"^{path!s}: .*{message}"):
        load_keys_file(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(KeysError, match="cannot read it"):
        load_keys_file(tmp_path / "nope.toml")


def test_file_and_environment_records_together(tmp_path: Path):
    path = tmp_path / "keys.toml"
    append_key(path, ApiKey(name="a", sha256=DIGEST, scopes=frozenset({Scope.READ})))
    other = ApiKey(name="b", sha256="0" * 64, scopes=frozenset({Scope.INFER}))
    assert [k.name for k in load_keys(path, [other])] == ["a", "b"]
    with pytest.raises(KeysError, match="INFERD_API_KEYS: the name 'a'"):
        load_keys(path, [ApiKey(name="a", sha256="1" * 64, scopes=frozenset({Scope.INFER}))])


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_append_keeps_file_private_and_loadable(tmp_path: Path, suffix: str):
    path = tmp_path / f"keys{suffix}"
    append_key(path, ApiKey(name="a", sha256=DIGEST, scopes=frozenset({Scope.READ, Scope.INFER})))
    append_key(path, ApiKey(name="b", sha256="0" * 64, scopes=frozenset({Scope.ADMIN})))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [(k.name, k.scopes) for k in load_keys_file(path)] == [("a", {Scope.READ, Scope.INFER}), ("b", {Scope.ADMIN})]
    with pytest.raises(KeysError, match="the name 'a'"):
        append_key(path, ApiKey(name="a", sha256="1" * 64, scopes=frozenset({Scope.READ})))


def test_keys_create_command(cli, tmp_path: Path):
    path = tmp_path / "keys.toml"
    result = cli("keys", "create", "--name", "ci", "--scopes", "infer,read", "--file", str(path))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert len(key) == 43
    assert key not in path.read_text()
    [record] = load_keys_file(path)
    assert record.sha256 == hash_key(key)
    assert record.scopes == {Scope.INFER, Scope.READ}
    printed = cli("keys", "create", "--name", "ops", "--scopes", "admin")
    new, record_line = printed.stdout.strip().splitlines()
    assert json.loads(record_line) == [{"name": "ops", "sha256": hash_key(new), "scopes": ["admin"]}]
    bad = cli("keys", "create", "--name", "x", "--scopes", "write")
    assert bad.returncode == 2
    assert "scopes" in bad.stderr
