"""Study 2: SynTOD synthetic task-oriented dialogue generation and evaluation."""
