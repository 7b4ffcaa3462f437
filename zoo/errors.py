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


class ReproducibilityError(ZooError):
    """A runner does not reproduce the package's test tensors within tolerance."""
