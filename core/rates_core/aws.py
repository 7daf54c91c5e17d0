"""botocore sessions whose credential refreshes fail in seconds."""

import botocore.config
import botocore.session

# IRSA's credentials come from STS (AssumeRoleWithWebIdentity) on first use and at each
# hourly refresh, made by the session's own STS client: with botocore's defaults (60 s
# timeouts, tried 3 times) a silent STS would hold the caller for minutes. In the API a
# token is asked for under the connection pool's lock; in the controller a loop pass
# would outlast its liveness limit. Here: two tries of at most 5 s each.
STS_CLIENT_CONFIG = {"connect_timeout": 2, "read_timeout": 3,
                     "retries": {"total_max_attempts": 2, "mode": "standard"}}


def session() -> botocore.session.Session:
    """A botocore session whose clients, its credential provider's STS client included,
    default to STS_CLIENT_CONFIG; a client's own config overrides it."""
    core = botocore.session.Session()
    core.set_default_client_config(botocore.config.Config(**STS_CLIENT_CONFIG))
    return core
