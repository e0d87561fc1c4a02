"""Code packages: corrupt, escaping and oversized archives are refused; modes are kept."""

import io
import os
import stat
import zipfile

import pytest

from conftest import create, error_code, make_zip, status, unique


def zip_with(entries):
    """entries: (name, data, mode, is_symlink)"""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data, mode, link in entries:
            info = zipfile.ZipInfo(name)
            kind = stat.S_IFLNK if link else (stat.S_IFDIR if name.endswith("/") else stat.S_IFREG)
            info.external_attr = (kind | mode) << 16
            z.writestr(info, data)
    return buf.getvalue()


BAD_PACKAGES = [
    ("not a zip", b"this is not a zip file"),
    ("truncated zip", make_zip()[:-30]),
    ("zip-slip", zip_with([("../../etc/evil", "x", 0o644, False)])),
    ("absolute symlink", zip_with([("link", "/etc/passwd", 0o777, True)])),
    ("escaping symlink", zip_with([("a/link", "../../outside", 0o777, True)])),
    ("write through symlink", zip_with([("d", ".", 0o777, True), ("d/x", "x", 0o644, False)])),
]


@pytest.mark.parametrize("label,package", BAD_PACKAGES, ids=[label for label, _ in BAD_PACKAGES])
def test_bad_packages_are_refused(lam, server, label, package):
    name = unique()
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, name, Code={"ZipFile": package})
    assert status(e) == 400
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    assert not list(server.data_dir.parent.glob("evil"))


def test_unzipped_size_limit(lam):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros.bin", "w") as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(251):
                f.write(chunk)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, Code={"ZipFile": buf.getvalue()})
    assert "Unzipped size must be smaller than 262144000 bytes" in e.value.response["Error"]["Message"]


def test_zipped_upload_limit(lam):
    big = os.urandom(50 * 1024 * 1024 + 1024)  # incompressible: the zip exceeds 50 MiB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("blob", big)
    with pytest.raises(lam.exceptions.ClientError) as e:
        create(lam, Code={"ZipFile": buf.getvalue()})
    assert (error_code(e), status(e)) == ("RequestTooLargeException", 413)


def test_modes_and_links_inside_the_package_are_kept(lam, server):
    package = zip_with([
        ("bootstrap", "#!/bin/sh\n", 0o755, False),
        ("lib/", "", 0o755, False),
        ("lib/data", "d", 0o600, False),
        ("lib/alias", "data", 0o777, True),
        ("suid", "x", 0o4755, False),
    ])
    cfg = create(lam, Runtime="provided.al2023", Handler="x", Code={"ZipFile": package})
    sha = __import__("hashlib").sha256(package).hexdigest()
    root = server.data_dir / "code" / sha
    mode = lambda p: (root / p).stat().st_mode & 0o7777
    assert mode("bootstrap") == 0o755
    assert mode("lib/data") == 0o644
    assert mode("suid") == 0o755
    assert os.readlink(root / "lib/alias") == "data"
    assert cfg["CodeSize"] == len(package)
