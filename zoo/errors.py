"""The zoo's own errors: each says what was expected and what to do."""


class ZooError(Exception):
    """Base class: a user-facing problem, printed without a traceback by the CLI."""


class SpecError(ZooError):
    """A spec (zoo.yaml / spec.yaml) is malformed or violates the schema."""

    def __init__(self, message: str, problems: list[str] | None = None, source: str | None = None):
        self.problems = problems or []
        self.source = source
        where = f"{source}: " if source else ""
        detail = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(f"{where}{message}{detail}")


class IntegrityError(ZooError):
    """A file is missing or its sha256 does not match the spec."""


class NotFoundError(ZooError):
    """A package, version or file could not be found."""


class VersionConflictError(ZooError):
    """A version already exists in a registry with different content (versions are immutable)."""


class UnknownArchitectureError(ZooError):
    """A spec names an architecture id that no installed package registers."""


class InputError(ZooError):
    """An input image does not fit what the model expects (dimensions, channels, dtype)."""


class ColourImageError(InputError):
    """A colour (RGB/RGBA) image given to a single-channel model; the api adds which installed
    packages take colour."""


class ReproducibilityError(ZooError):
    """A runner does not reproduce the package's test tensors within tolerance."""


class StorageError(ZooError):
    """A file or folder could not be read or written (permissions, disk full, file size limit)."""


_STORAGE_HINTS = {
    "EACCES": "you have no permission there: choose another location or fix its permissions",
    "EPERM": "the operation is not permitted there: choose another location or fix its permissions",
    "EROFS": "the file system is read-only: choose a writable location (ZOO_HOME / ZOO_CACHE / -o)",
    "ENOSPC": "the disk is full: free some space or choose another location",
    "EDQUOT": "the disk quota is exceeded: free some space or choose another location",
    "EFBIG": "the file is larger than this process may write (ulimit -f): raise the limit or "
             "choose a smaller output",
    "ELOOP": "it leads into a loop of symbolic links: remove the loop",
    "ENAMETOOLONG": "the name is too long for this file system",
}


def storage_error(error: OSError, action: str) -> StorageError:
    """A :class:`StorageError` for ``error`` (an OSError) met while doing ``action``."""
    import errno

    code = errno.errorcode.get(error.errno or 0, "")
    where = f" {error.filename}" if error.filename else ""
    hint = _STORAGE_HINTS.get(code, error.strerror or str(error))
    return StorageError(f"could not {action}{where}: {hint} ({code or type(error).__name__})")


class storage:
    """Context manager: OSErrors of the storage kind (permissions, space, limits, loops) inside
    it become a :class:`StorageError` naming ``action``; other errors pass unchanged."""

    KINDS = frozenset(_STORAGE_HINTS)

    def __init__(self, action: str):
        self.action = action

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        import errno

        if isinstance(error, OSError) and not isinstance(error, ZooError) \
                and errno.errorcode.get(error.errno or 0, "") in self.KINDS:
            raise storage_error(error, self.action) from error
        return False
