"""A photo whose file can no longer be opened since indexing is a 404 on every URL that shows it, not a 500:
its path now runs through a file where a folder was (ENOTDIR), it became a link to itself (ELOOP), or
the server's user may not read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from indexer.library import Library
from indexer.pipeline import index_folder
from tests.conftest import SAMPLES
from tests.web.library_setup import REPO, make_app


@pytest.fixture
def client_and_root(tmp_path, backbone):
    """Two real photos in a folder of the collection, indexed; the app over them."""
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    for photo in sorted((SAMPLES / "dress").glob("*.jpg"))[:2]:
        shutil.copy(photo, root / "album" / photo.name)
    library = Library(tmp_path / "lib", create=True)
    index_folder(root, library, backbone, workers=0)
    yield make_app(library, backbone).test_client(), root
    library.close()


def urls(image: dict) -> list[str]:
    return [image["original_url"], image["thumb_url"], image["large_url"]]


def test_a_folder_replaced_by_a_file_is_404(client_and_root):
    client, root = client_and_root
    images = client.get("/api/images").get_json()["images"]
    assert len(images) == 2
    shutil.rmtree(root / "album")
    (root / "album").write_bytes(b"now a file")
    for image in images:
        for url in urls(image):
            assert client.get(url).status_code == 404, url


def test_a_photo_become_a_link_to_itself_is_404(client_and_root):
    client, root = client_and_root
    image = client.get("/api/images").get_json()["images"][0]
    path = root / image["path"]
    path.unlink()
    os.symlink(path.name, path)  # a loop: resolving it fails with ELOOP
    for url in urls(image):
        assert client.get(url).status_code == 404, url


# A request of this process's user, as a subprocess: root reads any file, so as root the request runs
# without the capabilities that let it (setpriv), as the server's user in the Dockerfile would.
REQUEST = """
import sys
from web import create_app
from web.settings import Settings
app = create_app(Settings(library=sys.argv[1]))
print(app.test_client().get(sys.argv[2]).status_code)
"""


def status_as_a_user(library_path, url: str) -> int:
    command = [sys.executable, "-c", REQUEST, str(library_path), url]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root, and no setpriv here to drop the capability to read any file")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                   "--inh-caps", "-dac_override,-dac_read_search", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_a_photo_that_cannot_be_read_is_404(client_and_root, tmp_path):
    client, root = client_and_root
    image = client.get("/api/images").get_json()["images"][0]
    assert status_as_a_user(tmp_path / "lib", image["original_url"]) == 200
    (root / image["path"]).chmod(0)  # another user's photo in a shared folder
    for url in urls(image):
        assert status_as_a_user(tmp_path / "lib", url) == 404, url
