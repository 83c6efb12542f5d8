"""The command lines, one module per tool, each with ``main(argv) -> int`` (exit status).

Installed as console scripts (``deva-train``, ``deva-track``, ``deva-evaluate``, ``deva-score``,
``deva-validate``, ``deva-app``, ``deva-demo``, ``deva-benchmark``, ``deva-make-synthetic``,
``deva-make-shards``); ``python tools/<name>.py`` runs the same ``main`` from a checkout.
Arguments are ``key=value`` overrides of the tool's config (``deva/configs/<name>.yaml``).
"""
