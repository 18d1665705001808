"""The routes, one blueprint per concern; a route's code is found by its URL's first
segment: pages (/, /static, /health, /openapi.json), prediction (/predict), models (/models,
/model, /reset, /pretrain) and training (/train)."""
from sanic import Blueprint

from .models import bp as models
from .pages import bp as pages
from .prediction import bp as prediction
from .training import bp as training

routes = Blueprint.group(pages, prediction, models, training)
