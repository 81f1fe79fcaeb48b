"""Layer 1, core: pure functions and names — methods, routers, sampling, and the trace schema.

Imports nothing of the project's other layers; ``schema`` is numpy only, the rest torch only.
"""
