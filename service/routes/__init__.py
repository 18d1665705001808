"""The routes, one blueprint per concern; a route's code is found by its URL's first
segment: pages (/, /static, /health, /openapi.json), prediction (/predict), models (/models,
/model, /reset, /pretrain), nets (/nets: private nets, versions, rollback), training
(/train), samples (/samples), insight (/confusion,
/compare: what the page teaches with), health (/health/live, /health/ready, /metrics),
inference (/v2, the Open Inference Protocol) and exports (/nets/{name}/export,
/models/{k}/export: a net as a download)."""
from sanic import Blueprint

from .exports import bp as exports
from .health import bp as health
from .inference import bp as inference
from .insight import bp as insight
from .models import bp as models
from .nets import bp as nets
from .pages import bp as pages
from .prediction import bp as prediction
from .samples import bp as samples
from .training import bp as training

routes = Blueprint.group(pages, prediction, models, nets, training, samples, insight, health,
                         inference, exports)
