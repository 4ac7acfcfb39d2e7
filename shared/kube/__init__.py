"""The Kubernetes target: ``spec`` (record and names), ``manifests`` (rendering),
``cluster`` (apply, watch, delete), ``target`` (observe, reconcile)."""
