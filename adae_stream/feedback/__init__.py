"""Labels joined with the answers they judge, and the evidence that gives: one package under both ``stream/``
(whose loop feeds the join and writes the evidence ledger) and ``decisions/`` (which reads the ledger).

- evidence.py: the one evidence type (``Counts`` of a comparison, ``PairedEvidence`` naming it);
- outcome.py: what became of a label (``Outcome``), as the metrics count it;
- labels.py: the feedback record's format;
- answers.py: what an answer holds for the join, read back from the output and shadow topics;
- join.py: ``FeedbackJoin``, labels in, outcomes out, in order per label partition;
- journal.py: the join's decisions scoped to the checkpoint (transaction) that holds their label records;
- tail.py: the one reader of topics outside any group, to their end now (fetch high watermarks);
- join_tail.py: every replica's view of the group's answers, for the join;
- ledger.py, ledger_reader.py: the evidence ledger's records, their sums, and the decision-maker's reader.

It imports nothing of ``stream/``, ``decisions/`` or ``monitoring/`` (tests/fast/test_codebase.py).
"""
