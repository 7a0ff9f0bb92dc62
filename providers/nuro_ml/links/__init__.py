"""Operator extra links (Ray and KubeRay dashboards)."""
