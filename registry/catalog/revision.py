"""The schema revision this code expects, as a constant: checking it must not import Alembic.

``tests/test_cli_startup.py`` holds it to Alembic's own head (``ScriptDirectory``): a new
migration under ``migrations/versions`` updates this line too. Should it lag, nothing breaks:
``ensure_schema`` then asks Alembic (0.25 s slower) and the stdlib resolve steps aside.
"""

from __future__ import annotations

HEAD_REVISION = "0009"
