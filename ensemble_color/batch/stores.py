"""Where a batch job's inputs and outputs live: a local folder, or any pyarrow filesystem URI (``s3://``,
``gs://``, ``hdfs://``, ``file://``), behind one small :class:`Store` interface, with the CLI's listing rule,
load errors and atomic writes."""

from __future__ import annotations

import io as _io
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from PIL import Image

from ..io import ImageLoadError, LoadedImage, atomic_write_bytes, encode_image, load_image, read_image, save_image
from ..naming import expand_inputs, is_input_image

SCALE_HINT = "pip install 'ensemble_color[scale]'"


class Store(Protocol):
    """A folder of files named by *locations* (a local path, or a URI) — what inputs and outputs live in."""

    root: str

    def list_images(self, recursive: bool) -> list[str]: ...
    def names(self) -> set[str]: ...
    def child(self, name: str) -> str: ...
    def exists(self, location: str) -> bool: ...
    def load(self, location: str) -> LoadedImage: ...
    def save(self, image: Image.Image, location: str) -> None: ...
    def read_bytes(self, location: str) -> bytes | None: ...
    def write_bytes(self, location: str, data: bytes) -> None: ...
    def make_root(self) -> None: ...


@dataclass(frozen=True)
class LocalStore:
    """A local (or shared-mounted) folder, through the very functions the CLI uses: same listing, same
    load errors, same atomic save."""

    root: str

    def list_images(self, recursive: bool) -> list[str]:
        files, errors = expand_inputs([self.root], recursive)
        if errors:
            raise FileNotFoundError(errors[0])
        # stills only, as for URIs: the CLI's folder listing also holds videos and animations, which batch
        # does not colourise (a single INPUT file is taken as given)
        single = Path(self.root).is_file()
        return [str(f.absolute()) for f in files if single or is_input_image(f)]

    def names(self) -> set[str]:
        folder = Path(self.root)
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    def child(self, name: str) -> str:
        return str(Path(self.root) / name)

    def exists(self, location: str) -> bool:
        return Path(location).exists()

    def load(self, location: str) -> LoadedImage:
        return load_image(location)

    def save(self, image: Image.Image, location: str) -> None:
        save_image(image, location)

    def read_bytes(self, location: str) -> bytes | None:
        path = Path(location)
        return path.read_bytes() if path.exists() else None

    def write_bytes(self, location: str, data: bytes) -> None:
        atomic_write_bytes(location, data)

    def make_root(self) -> None:
        Path(self.root).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ArrowStore:
    """A folder on any pyarrow filesystem (``s3://``, ``gs://``, ``hdfs://``, ``file://``…). Locations are
    ``root`` + relative path, so the manifest names files the way the user named the folder."""

    root: str     #: the URI as given, without query and trailing slash
    base: str     #: the same folder as a path of ``fs``
    fs: Any       #: a ``pyarrow.fs.FileSystem`` (picklable: travels to Ray actors)

    @classmethod
    def from_uri(cls, uri: str) -> ArrowStore:
        try:
            from pyarrow import fs as pafs
        except ImportError as err:
            raise ImportError(f"{uri}: filesystem URIs need pyarrow ({SCALE_HINT})") from err
        filesystem, base = pafs.FileSystem.from_uri(uri)
        return cls(root=uri.split("?", 1)[0].rstrip("/"), base=base.rstrip("/"), fs=filesystem)

    def _path(self, location: str) -> str:
        return self.base + location[len(self.root):]

    def _location(self, path: str) -> str:
        return self.root + path[len(self.base):]

    def _type(self, location: str) -> Any:
        return self.fs.get_file_info(self._path(location)).type

    def list_images(self, recursive: bool) -> list[str]:
        from pyarrow import fs as pafs

        kind = self._type(self.root)
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self.root}: no such file or folder")
        if kind == pafs.FileType.File:
            return [self.root]
        infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=recursive))
        paths = [i.path for i in infos if i.type == pafs.FileType.File and is_input_image(PurePosixPath(i.path))]
        return [self._location(p) for p in sorted(paths, key=PurePosixPath)]  # the CLI's (Path) order

    def names(self) -> set[str]:
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return {i.base_name for i in infos}

    def child(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, location: str) -> bool:
        from pyarrow import fs as pafs

        return self._type(location) != pafs.FileType.NotFound

    def load(self, location: str) -> LoadedImage:
        try:
            data = self.read_bytes(location)
        except OSError as err:  # network, permissions: this file's failure, told like load_image's
            raise ImageLoadError(f"{location}: cannot read ({err})") from None
        if data is None:
            raise ImageLoadError(f"{location}: no such file")
        return read_image(_io.BytesIO(data), location)

    def save(self, image: Image.Image, location: str) -> None:
        self.write_bytes(location, encode_image(image, PurePosixPath(location).name))

    def read_bytes(self, location: str) -> bytes | None:
        if not self.exists(location):
            return None
        with self.fs.open_input_stream(self._path(location)) as f:
            return f.read()

    def write_bytes(self, location: str, data: bytes) -> None:
        """Temporary sibling + move: a local or HDFS rename is atomic, an object store's copy appears whole."""
        from pyarrow import fs as pafs

        path = PurePosixPath(self._path(location))
        tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, str(path))
        except BaseException:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:  # clean up, then report the error
                self.fs.delete_file(tmp)
            raise

    def make_root(self) -> None:
        self.fs.create_dir(self.base, recursive=True)


def open_store(location: str) -> Store:
    """A URI (``scheme://…``) goes through pyarrow; anything else is a local path."""
    return ArrowStore.from_uri(location) if "://" in location else LocalStore(str(Path(location).absolute()))
