"""The main job (``biencoder main``): fine-tune all-MiniLM-L6-v2 on SciFact with the model card's
recipe and with an improved recipe, and report both against the base model.

- ``settings``: what the job runs on (its tasks, the data it needs, the fusion cross-validation)
  and ``MainJobSettings``, one run's choices;
- ``hybrid``: BM25 and hybrid rows beside dense retrieval, and SciFact's cross-validated alpha;
- ``run``: ``run_main_job``, the steps from the base model to the report;
- ``report``: report.md, report.json and report.png.

The command line (``biencoder.cli.main_job``) only parses arguments into ``MainJobSettings``.
"""
