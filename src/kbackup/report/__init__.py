"""The report people read (issue 19): per job what was backed up, failed and verified, sizes
and their trend, the time to recover; storage per target; open alerts. `build.py` gathers it
from the catalog, `text.py` says it as aligned text (terminal, chat; stdlib only: kbackupctl
uses it), `html.py` as a mail with `chart.py`'s small PNG bar charts."""
