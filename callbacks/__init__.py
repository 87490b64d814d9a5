"""Lightning callbacks: rate annealing (λ), codec export, input-health reporting."""
