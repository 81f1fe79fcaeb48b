#!/usr/bin/env bash
# The committed micro-family study (reports/micro/): scripts/study.sh with FAMILY=micro (see there).
#
#   LIMIT=150 scripts/micro_study.sh                                         # runs in runs/study, report in runs/study/report
#   LIMIT=all OUT=runs/study-all REPORT=reports/micro FORCE=1 scripts/micro_study.sh   # regenerate the committed study
FAMILY=micro exec bash "$(dirname "$0")/study.sh"
