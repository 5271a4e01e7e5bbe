"""Great Expectations suites, as code: one function per artifact family.

Each returns a ``gx.ExpectationSuite`` run against the snapshot's records as a pandas frame
by :mod:`expectations.gate` before anything is published.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

__all__ = ["SUITES", "exact_suite", "intent_suite", "topic_suite"]

MAX_TOPIC_TOKENS = 4000


def exact_suite() -> gx.ExpectationSuite:
    """L1 exact answers: unique ids, non-empty questions and answers, every answer cited."""
    suite = gx.ExpectationSuite(name="l1_exact")
    for column in ("id", "question", "answer"):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
        suite.add_expectation(gxe.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1))
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["id", "language", "tenant_key"])
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="source_count", min_value=1))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1)
    )
    return suite


def intent_suite() -> gx.ExpectationSuite:
    """L2 intent templates: unique intents, a template and training phrasings for each."""
    suite = gx.ExpectationSuite(name="l2_intents")
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["intent", "language", "tenant_key"])
    )
    suite.add_expectation(gxe.ExpectColumnValueLengthsToBeBetween(column="template", min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="example_count", min_value=1))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="source_count", min_value=1))
    return suite


def topic_suite() -> gx.ExpectationSuite:
    """L3 topic blocks: unique topics, token counts within the budget, sources cited."""
    suite = gx.ExpectationSuite(name="l3_topics")
    suite.add_expectation(
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["topic", "language", "tenant_key"])
    )
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="tokens", min_value=1, max_value=MAX_TOPIC_TOKENS)
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="source_count", min_value=1))
    return suite


SUITES = {"exact": exact_suite, "intents": intent_suite, "topics": topic_suite}
