"""``/sisy/metrics``: the cluster's metrics for Prometheus (``sisy_pg.metrics``).

Staff users may read it, and so may a request carrying ``SISY_METRICS_TOKEN``
as a bearer token (what a Prometheus server sends); anyone else is refused
with a 403, or a 401 naming the Bearer scheme once a token is configured.
"""

from __future__ import annotations

import hmac
import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from sisy_pg import conf, metrics

logger = logging.getLogger(__name__)


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def may_read_metrics(request: HttpRequest) -> bool:
    """Whether the request offers the configured token, or comes from an active staff user.

    A wrong token is refused even from a staff session: it is a misconfigured scraper.
    """
    expected = conf.settings.METRICS_TOKEN
    offered = bearer_token(request)
    if offered is not None:
        return bool(expected) and hmac.compare_digest(offered.encode(), str(expected).encode())
    user = getattr(request, "user", None)  # no AuthenticationMiddleware: anonymous
    return bool(user is not None and user.is_active and user.is_staff)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus' text exposition (or OpenMetrics, when the scraper asks for it)."""
    if not may_read_metrics(request):
        if conf.settings.METRICS_TOKEN:
            response = HttpResponse(
                "A bearer token (SISY_METRICS_TOKEN) or a staff user's session is needed.\n",
                status=401,
                content_type="text/plain; charset=utf-8",
            )
            response["WWW-Authenticate"] = 'Bearer realm="sisy metrics"'
            return response
        return HttpResponse(
            "Staff users only (or set SISY_METRICS_TOKEN for a scraper).\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    try:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    except DatabaseError as exc:
        logger.warning(
            "sisy metrics could not be read: %s",
            exc,
            extra={"action": "metrics_failed", "error": str(exc)},
        )
        return HttpResponse(
            "sisy metrics could not be read from the database.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(body, content_type=content_type)
