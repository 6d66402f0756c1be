"""The course machinery: the launcher (`python3 -m ppo_core.course lab|test`), the labs
(`widgets`), the shared figures (`plots`), the exercise checker (`checker`) and chapter
06's planted RLHF bugs (`faults`).

This file imports nothing: `python3 -m ppo_core.course` must run with a bare Python before
torch and the rest are installed (`__main__.py` uses the standard library only).
"""
