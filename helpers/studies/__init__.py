"""The follow-up studies, one module each; every number they put in a sentence is read from finished runs.

* ``seeds``: every model with several seeds on a shorter schedule (notebook 08).
* ``heads``: the author's 256-logit head beside the 10-way head (notebook 07).
* ``ladder``: from model 3, one change at a time, on a validation split (notebook 09).
* ``final``: the final model chosen from the ladder, and its recipe over seeds (notebook 09).
* ``jpeg``: what JPEG compression costs: the final recipe on the copy compressed once more (issue 17).
* ``precision``: bf16 against fp32 with the same seeds in both, paired (issue 17).
* ``gap``: the gap to the author at epoch 10 split by experiment: precision, JPEG, the rest (issue 30).
* ``checked``: what changed when the conclusions were checked, each correction with its size (notebook 09).
* ``common``: where the studies write their tables.

``from helpers import studies as S`` gives all of them as ``S.<name>``.
"""
from .checked import what_changed, what_changed_fields  # noqa: F401
from .common import SHORT_NAMES, save_table  # noqa: F401
from .final import (choose_final, final_run_name, final_seed_fields, final_seed_runs, final_seed_table,  # noqa: F401
                    final_summary, finished_final_seeds, found_fields, one_view_accuracy, precision_fields, recipe_table,
                    save_final)
from .heads import head_findings, head_table, unused_logit_share  # noqa: F401
from .ladder import (Step, accuracy_se, airbench_optimiser, batchnorm_refresh,  # noqa: F401
                     batchnorm_refresh_findings, default_ladder, hypothesis_fields, hypothesis_verdict,
                     ladder_configs, ladder_findings, run_ladder, with_noise)
from . import figures, gap, jpeg, precision  # noqa: F401
from .seeds import history_prefix, seed_checks, seed_checks_markdown, seed_spread, seed_study, seed_table, spread_facts  # noqa: F401
