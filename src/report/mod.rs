//! Reports: progress lines, the summary table, JUnit XML.
