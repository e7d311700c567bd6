"""Offline tests of the Dataflow Flex Template files (templates/match_corpora) and their CLI."""
