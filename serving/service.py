"""The scoring service (``safetyml serve``): a BentoML declaration; the logic is in ``safetyml.scoring``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:  # in a bento the safetyml source ships beside serving/ instead of being installed
    import safetyml  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import bentoml
from starlette.responses import JSONResponse

from safetyml.envvars import ServeSettings
from safetyml.errors import SafetymlError
from safetyml.scoring import schemas as s
from safetyml.scoring.auth import BearerAuth
from safetyml.scoring.http import RequestLimits, error_response
from safetyml.scoring.metrics import ServiceMetrics
from safetyml.scoring.reload import ScorerHost
from safetyml.scoring.startup import metadata_app, prepare, require_request_bodies, service_options

SETTINGS = ServeSettings.from_env()
prepare(SETTINGS)  # logging; an invalid policy file stops start-up here
_HOST: dict[str, ScorerHost] = {}  # this worker's scorer host, for the /metadata app


@bentoml.service(
    name="safetyml",
    http={"host": SETTINGS.host},
    workers=SETTINGS.workers,
    threads=SETTINGS.threads,
    traffic={"timeout": 30},
    **service_options(SETTINGS),  # access log and tracing: off unless asked (they cost on every request)
)
@bentoml.asgi_app(metadata_app(_HOST, SETTINGS), path="/")
class SafetyScoring:
    """Serves the champions with the online store and the policies; every decision goes to the audit log."""

    def __init__(self) -> None:
        self.metrics = ServiceMetrics()  # in the worker, once BentoML has set up multi-process metrics
        self.host = _HOST["host"] = ScorerHost.for_service(SETTINGS.workers).start()  # loads first

    def __is_ready__(self) -> bool:
        return self.host.is_ready()

    @bentoml.on_shutdown
    def close(self) -> None:  # flush the audit log so no decision is lost on a normal stop
        self.host.close()

    def _answer(self, call: Any) -> Any:
        try:  # the decisions of this request are durable in the audit journal before the response leaves
            scorer = self.host.ready_scorer()
            with self.host.audit.batch():
                response = call(scorer)
            self.metrics.observe(response)
            return response
        except SafetymlError as exc:
            status, body = error_response(exc)
            self.metrics.error(sys._getframe(1).f_code.co_name, status)  # the endpoint method's name
            return JSONResponse(body, status_code=status)
        finally:
            self.metrics.queue_depth(self.host.audit.queue_depth())

    @bentoml.api(input_spec=s.TripScoreRequest)
    def score_trip(self, **fields: Any) -> s.TripScoreResponse:
        """Score one trip at dispatch time: probability, risk tier, action, reasons, versions, decision_id."""
        return self._answer(lambda scorer: scorer.score_trip(s.TripScoreRequest.model_construct(**fields)))

    @bentoml.api(input_spec=s.TripBatchRequest)
    def score_trips(self, items: list[s.TripScoreRequest]) -> s.TripBatchResponse:
        """Score up to 1,000 trips in one call."""
        return self._answer(lambda scorer: s.TripBatchResponse(items=scorer.score_trips(list(items))))

    @bentoml.api(input_spec=s.MerchantScoreRequest)
    def score_merchant(self, **fields: Any) -> s.MerchantScoreResponse:
        """Score one merchant: probability of default, credit score, grade, reasons, action."""
        return self._answer(lambda sc: sc.score_merchant(s.MerchantScoreRequest.model_construct(**fields)))

    @bentoml.api(input_spec=s.MerchantBatchRequest)
    def score_merchants(self, items: list[s.MerchantScoreRequest]) -> s.MerchantBatchResponse:
        """Score up to 1,000 merchants in one call."""
        return self._answer(lambda scorer: s.MerchantBatchResponse(items=scorer.score_merchants(list(items))))

    @bentoml.api(input_spec=s.ReloadRequest)
    def reload(self, alias: str = "champion") -> s.ReloadResponse:
        """Load the models under ``alias`` and swap them in without dropping requests in flight."""
        return self._answer(lambda _: s.ReloadResponse(**self.host.reload(alias)))


SafetyScoring.add_asgi_middleware(BearerAuth, token=SETTINGS.token)  # first: 401 before reading a body
SafetyScoring.add_asgi_middleware(RequestLimits)  # then 415 / 413 / duplicate keys before BentoML parses
require_request_bodies(SafetyScoring)  # the OpenAPI document says a POST needs its JSON body
