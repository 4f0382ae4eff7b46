"""Reading files from outside (configs, JSON indexes, run-directory records, weights, images) so
that no file can hang kdforge or make it allocate what the file declares.

- Only regular files are read: a FIFO would block forever, a character device such as /dev/zero
  (or a symbolic link to one) would never end. The file is opened without blocking and checked
  on the open descriptor, so it cannot be swapped for something else between check and read.
- At most `limit` bytes are read, judged by the file's size before reading (a sparse file can
  claim a terabyte); a larger file is refused by name.
- `check_declared_input`: an input shape a file or a flag declares is bounded before a tensor of
  that shape exists.
- YAML is composed into nodes first, and its expansion (aliases count once per use, so a
  "billion laughs" document is measured, not built) and nesting are bounded before any Python
  object is constructed.
"""

import json
import math
import os
import stat
from pathlib import Path

import yaml

from kdforge.errors import UserError, printable, reading

MiB = 1 << 20
YAML_MAX_NODES = 100_000   # a config is a few hundred nodes
MAX_NESTING = 64           # a config nests 5 deep, an index 4
MAX_TENSOR_MIB = 1024      # what a file's declared shapes may imply; a ResNet-50 activation at batch 64 is 200 MiB


def check_declared_input(shape, what: str, max_bytes: int = MAX_TENSOR_MIB << 20) -> None:
    """Refuses an fp32 input of `shape` (declared by a file or a flag) larger than `max_bytes`."""
    if not all(type(d) is int and d > 0 for d in shape):
        raise UserError(f"{what}: the input shape {printable(str(list(shape)))} needs positive integer sizes.")
    nbytes = 4 * math.prod(shape)
    if nbytes > max_bytes:
        raise UserError(f"{what}: an input of {'x'.join(map(str, shape))} would take {nbytes / MiB:,.0f} MiB, more than the "
                        f"{max_bytes / MiB:,.0f} MiB kdforge allocates for one declared tensor.")


def _regular_descriptor(path: Path, what: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor of `path` and its status, a UserError unless it is an existing regular file."""
    path = Path(path)
    where = printable(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{what} {where} does not exist.") from None
    except IsADirectoryError:
        raise UserError(f"{what} {where} is a folder; kdforge reads only regular files.") from None
    except OSError as e:
        raise UserError(f"{what} {where} cannot be opened ({e.strerror}).") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(status.st_mode) else "not a regular file (a device, pipe or socket)"
        raise UserError(f"{what} {where} is {kind}; kdforge reads only regular files.")
    return fd, status


def open_regular(path: Path, what: str):
    """`path` opened for binary reading, a UserError unless it is an existing regular file."""
    return os.fdopen(_regular_descriptor(path, what)[0], "rb")


def read_bytes(path: Path, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (unbuffered: a training image is read
    in one system call)."""
    fd, status = _regular_descriptor(path, what)
    size = status.st_size  # before reading: a sparse file can claim a terabyte of zeros
    chunks, total = [], 0
    try:
        while size <= limit and total <= limit:
            chunk = os.read(fd, max(size - total, 0) + 1)  # +1 sees a file that grew
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if size > limit or total > limit:
        raise UserError(f"{what} {printable(str(path))} is larger than {limit // MiB:,} MiB, more than such a file ever "
                        f"holds; it is not read.")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_text(path: Path, what: str, limit: int) -> str:
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {printable(str(path))} is not UTF-8 text (byte {e.start}).") from None


def read_json(path: Path, what: str, limit: int = 16 * MiB):
    """The JSON value of a regular file; a UserError if it is not JSON or nests too deeply."""
    text = read_text(path, what, limit)
    with reading(f"{what} {printable(str(path))}"):
        value = json.loads(text)
    _check_nesting(value, f"{what} {printable(str(path))}")
    return value


def _check_nesting(value, what: str) -> None:
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_NESTING:
            raise UserError(f"{what} nests more than {MAX_NESTING} levels deep; it is not read.")
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]


def _expanded_size(root: yaml.Node, what: str) -> None:
    """Refuses a YAML node graph whose expansion exceeds YAML_MAX_NODES or MAX_NESTING."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack = [(root, False)]
    while stack:  # post-order without recursion: each distinct node is measured once
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        size[id(node)] = 1 + sum(size.get(id(c), 0) for c in children)
        depth[id(node)] = 1 + max((depth.get(id(c), 0) for c in children), default=0)
        if size[id(node)] > YAML_MAX_NODES:
            raise UserError(f"{what} expands to more than {YAML_MAX_NODES:,} values (YAML aliases repeat what they "
                            f"name); it is not read.")
        if depth[id(node)] > MAX_NESTING:
            raise UserError(f"{what} nests more than {MAX_NESTING} levels deep; it is not read.")


def load_yaml(text: str, what: str):
    """The value of a YAML document (safe tags only), its expansion and nesting bounded first."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError:  # the reader refuses control characters before anything is parsed
        raise UserError(f"{what}: not valid YAML (it holds control characters).") from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise UserError(f"{what} nests more than {MAX_NESTING} levels deep; it is not read.") from None
        if node is None:
            return None
        _expanded_size(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{what}: not valid YAML{where}.") from None
    finally:
        loader.dispose()
