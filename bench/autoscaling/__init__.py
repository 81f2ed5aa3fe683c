"""``flotilla bench --suite autoscaling``: autoscalers against baselines and an oracle on a simulated fleet.

Modules: ``traces`` (load shapes and arrivals), ``baselines`` (HPA-like, fixed fleet, the reactive bound),
``oracle`` (perfect-foresight schedule and GPU-seconds), ``metrics`` (GPU-seconds, SLO attainment per minute,
step-to-ready), ``virtual`` + ``virtual_run`` (the default clock: a deterministic discrete-event fleet in
simulated time), ``sut`` (the wall clock's process under test: gateway + local scaler + engines), ``runner``,
``report``.
"""
