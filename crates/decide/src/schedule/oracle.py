"""Writes oracle.tsv: next fire times computed by APScheduler 3 itself.

Run with a Python that has APScheduler 3.x (dstack 0.22.5 pins it):
    python oracle.py > oracle.tsv
Columns: expression, start instant (UTC), APScheduler's next fire time (or `none`).
"""

from datetime import datetime, timezone

import apscheduler
from apscheduler.triggers.cron import CronTrigger

EXPRESSIONS = [
    "* * * * *",
    "0 * * * *",
    "*/15 * * * *",
    "5/10 * * * *",
    "7-50/9 */5 * * *",
    "0 0 * * *",
    "30 12 * * *",
    "0 9-17 * * mon-fri",
    "0 9 * * 0",  # APScheduler: 0 is Monday
    "0 9 * * 6",  # ... and 6 Sunday
    "0 9 * * sun",
    "0 9 * * SAT,sun",
    "0 9 * * */2",  # mon, wed, fri, sun
    "0 9 * * 1-5/2",  # tue, thu, sat
    "0 0 1 * *",
    "0 0 31 * *",
    "0 0 30 * *",
    "0 0 29 2 *",
    "0 0 29 feb mon",  # a leap day that is a Monday
    "0 0 last * *",
    "5 4 last * sun",  # the last day of the month AND a Sunday
    "0 0 13 * fri",  # Friday the 13th: APScheduler ANDs day and day of week
    "0 0 1,15 * 0",  # the 1st or 15th that is a Monday
    "0 0 */2 * *",
    "0 0 2/7 * *",
    "0 0 1 jan *",
    "0 0 1 jan-mar *",
    "0 0 * jan/2 *",  # trailing text after a name is ignored
    "0 0 * 2-11/3 *",
    "*/15 0-6 * jan-mar mon-fri",
    "59 23 31 12 *",
    "0 12 * * MON-fri",
    "0,30 8,20 * * *",
    "0 0 31 2 *",  # never
    "0 0 30 2 *",  # never
    "1-5 * * * *",
    "0-0/5 * * * *",
    "0 0 28-31 * *",
    "0 0 1 1 wed",
    "0 0 lastday * *",  # `last` matched at the start
    "0 0 1-7 * sun",  # the first Sunday of the month
    "00 05 * * *",
]

STARTS = [
    "2024-01-01T00:00:00",
    "2024-01-31T23:59:30",
    "2024-02-28T23:59:00",
    "2024-02-29T12:00:00",
    "2025-02-28T23:59:59.500000",
    "2025-06-15T08:59:59",
    "2025-12-31T23:59:00",
    "2026-03-13T00:00:00",
    "2027-11-30T17:45:01",
]


def main():
    print(f"# APScheduler {apscheduler.__version__}: expression, start, next fire time (UTC)")
    for expr in EXPRESSIONS:
        trigger = CronTrigger.from_crontab(expr, timezone=timezone.utc)
        for start in STARTS:
            now = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
            fire = trigger.get_next_fire_time(None, now)
            out = fire.strftime("%Y-%m-%dT%H:%M:%SZ") if fire else "none"
            print(f"{expr}\t{now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}\t{out}")


if __name__ == "__main__":
    main()
