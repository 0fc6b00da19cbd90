from tests.core.helpers import make_engine  # noqa: F401  (fixture)
