"""Tables and figures from stored runs: rows, identity, aggregation, leaderboards, ablations, the
thesis layout, committed boards, plots."""
