"""One optimizer step as a pipeline of small pieces (step), with its synchronisation strategy
(sync), the optional gradient-noise measurement (measure) and the finiteness check (finite)."""
