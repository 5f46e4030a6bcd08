"""sisy-pg's URLs: ``path("sisy/", include("sisy_pg.urls"))`` serves ``/sisy/metrics``."""

from __future__ import annotations

from django.urls import path

from sisy_pg import views

app_name = "sisy"

urlpatterns = [path("metrics", views.metrics_view, name="metrics")]
