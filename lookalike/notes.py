"""The NOTICE log level: one line a user should see that is not a problem (a task inferred, a model's own pooling
not used). Printed by default like warnings, silenced by -q."""

import logging

NOTICE = 25
logging.addLevelName(NOTICE, "NOTE")
