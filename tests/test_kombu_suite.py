"""kombu's own integration suite (``t/integration/common.py`` of the installed kombu's
sdist) on tq, over both stores, the way kombu's ``test_redis.py`` runs it on Redis.

scripts/test.sh downloads and unpacks the sdist into ``.cache/kombu-sdist`` (or point
``TQ_KOMBU_SDIST`` at an unpacked ``kombu-<version>`` directory). Without it the module
is skipped loudly, and fails in CI.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import kombu
import pytest
from kombu import Connection

import tq_kombu  # noqa: F401  (registers tq+)

from .conftest import IN_CI, free_port

ROOT = Path(__file__).resolve().parent.parent


def _sdist() -> Path:
    configured = os.environ.get("TQ_KOMBU_SDIST")
    if configured:
        return Path(configured)
    return ROOT / ".cache" / "kombu-sdist" / f"kombu-{kombu.__version__}"


def _load_common() -> ModuleType:
    path = _sdist() / "t" / "integration" / "common.py"
    if not path.is_file():
        reason = (
            f"KOMBU'S INTEGRATION SUITE NOT RUN: {path} is missing; run scripts/test.sh "
            f"(it downloads the kombu {kombu.__version__} sdist) or set TQ_KOMBU_SDIST"
        )
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    spec = importlib.util.spec_from_file_location("kombu_integration_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()


@pytest.fixture
def connection(store_url: str) -> Iterator[Connection]:
    conn = Connection(f"tq+{store_url}", transport_options={"lease_seconds": 4})
    yield conn
    conn.close()


@pytest.fixture(params=["sqlite", "redis"])
def invalid_connection(request: pytest.FixtureRequest, tmp_path: Path) -> Connection:
    """A store that cannot be reached: nothing listens on the port, or the database
    file lies under a regular file (so its directory cannot exist)."""
    if request.param == "redis":
        return Connection(f"tq+redis://127.0.0.1:{free_port()}/0")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return Connection(f"tq+sqlite:///{blocker / 'queue.db'}")


class TestBasicFunctionality(common.BasicFunctionality):  # type: ignore[misc,name-defined]
    pass


class TestExchangeTypes(common.BaseExchangeTypes):  # type: ignore[misc,name-defined]
    pass


class TestPriority(common.BasePriority):  # type: ignore[misc,name-defined]
    # tq: a higher number is more urgent, as in AMQP
    PRIORITY_ORDER = "asc"


class TestMessage(common.BaseMessage):  # type: ignore[misc,name-defined]
    pass


class TestTimeToLive(common.BaseTimeToLive):  # type: ignore[misc,name-defined]
    pass
