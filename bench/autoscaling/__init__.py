"""``flotilla bench --suite autoscaling``: autoscalers against baselines and an oracle on a simulated fleet.

Modules: ``traces`` (load shapes and arrivals), ``baselines`` (HPA-like, fixed fleet), ``oracle``
(perfect-foresight schedule and GPU-seconds), ``metrics`` (GPU-seconds, SLO attainment per minute,
step-to-ready), ``sut`` (the process under test: gateway + local scaler + engines), ``runner``, ``report``.
"""
