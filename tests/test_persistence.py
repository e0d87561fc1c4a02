"""An acknowledged change survives SIGTERM, restarts and kill -9 at any moment."""

import signal
import threading
import time

import pytest

from conftest import create, make_zip


def snapshot(lam, name):
    return {
        "config": {k: v for k, v in lam.get_function_configuration(FunctionName=name).items() if k != "ResponseMetadata"},
        "versions": [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]],
        "aliases": [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]],
        "tags": lam.list_tags(Resource=f"arn:aws:lambda:us-east-1:000000000000:function:{name}")["Tags"],
        "policy": lam.get_policy(FunctionName=name)["Policy"],
        "concurrency": lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions"),
    }


def populate(lam):
    name = create(lam, "persisted", Tags={"k": "v"}, Publish=True)["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Timeout=20, Environment={"Variables": {"AB": "b"}})
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    lam.add_permission(FunctionName=name, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    return name


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_state_survives_restart(fresh_server, how):
    fresh_server.start()
    lam = fresh_server.client()
    name = populate(lam)
    before = snapshot(lam, name)
    if how == "sigterm":
        assert fresh_server.stop(signal.SIGTERM) == 0
    else:
        fresh_server.kill()
    fresh_server.start()
    lam = fresh_server.client()
    assert snapshot(lam, name) == before
    code = lam.get_function(FunctionName=name)["Code"]["Location"]
    import urllib.request
    assert urllib.request.urlopen(code).read() == make_zip()


def test_kill9_during_writes_loses_no_acknowledged_change(fresh_server):
    """Writers hammer the server; it is killed mid-flight; every acknowledged create exists."""
    fresh_server.start()
    url = fresh_server.url
    acknowledged = []
    stop = threading.Event()

    def writer(prefix):
        from conftest import lambda_client
        lam = lambda_client(url)
        i = 0
        while not stop.is_set():
            name = f"{prefix}-{i}"
            try:
                create(lam, name, Code={"ZipFile": make_zip({"index.py": f"# {name}\n"})})
                acknowledged.append(name)
            except Exception:
                pass
            i += 1

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while len(acknowledged) < 15 and time.time() < deadline:
        time.sleep(0.05)
    fresh_server.kill()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 15
    fresh_server.start()
    lam = fresh_server.client()
    listed = {f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]}
    missing = [n for n in acknowledged if n not in listed]
    assert not missing, f"acknowledged but lost: {missing}"
    for name in acknowledged[:5] + acknowledged[-5:]:
        cfg = lam.get_function(FunctionName=name)
        import urllib.request
        assert urllib.request.urlopen(cfg["Code"]["Location"]).read() == make_zip({"index.py": f"# {name}\n"})


def _start_without_keys(data):
    import json, os, subprocess
    from conftest import lamina_binary
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    proc = subprocess.Popen([lamina_binary(), "server", "--listen", "127.0.0.1:0", "--data-dir", str(data),
                             "--log-format", "json"], stderr=subprocess.PIPE, env=env, text=True)
    banner = []
    for line in proc.stderr:
        banner.append(line)
        if "lamina is listening" in line:
            address = json.loads(line)["fields"]["address"]
            return proc, banner, "http://" + address
    raise AssertionError("".join(banner))


def test_generated_credentials_are_stored_private_and_reused(tmp_path):
    import stat
    from conftest import lambda_client
    data = tmp_path / "data"
    proc, banner, _ = _start_without_keys(data)
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    creds = data / "credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    values = dict(l.split("=", 1) for l in creds.read_text().splitlines())
    key, secret = values["LAMINA_ACCESS_KEY_ID"], values["LAMINA_SECRET_ACCESS_KEY"]
    assert any(f"export AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret}" in l for l in banner)
    proc, banner, url = _start_without_keys(data)
    try:
        assert not any("export AWS_ACCESS_KEY_ID" in l for l in banner)
        assert "Functions" in lambda_client(url, access_key=key, secret_key=secret).list_functions()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
