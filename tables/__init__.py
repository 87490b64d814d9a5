"""The papers' tables as experiment graphs (``python -m tables <table>``, conf/table/): build the
graph (:mod:`tables.graph`), run it on this machine or on SLURM (:mod:`tables.runner`), write the
paper's table beside the published numbers (:mod:`tables.writer`)."""
