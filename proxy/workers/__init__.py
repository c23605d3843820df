"""--concurrency N: a supervisor process and N workers that share every listener's port."""
