"""What every model's training shares: the epoch loop's bookkeeping and seeding (``loop``), the
threshold chosen on validation (``threshold``), resume after an interruption (``resume``), the
data-parallel processes and backward (``distributed``) and the device choice (``device``)."""
