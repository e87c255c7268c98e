"""RCfD inside other training engines: TRL (:mod:`rcfd.integrations.trl`) and verl/OpenRLHF-style
per-sample reward functions (:mod:`rcfd.integrations.verl`). RCfD is a change of reward, so these
adapters only wrap rewards; the engines keep their own generation, distribution and updates."""
