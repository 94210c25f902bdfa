"""Lightning callbacks: encoder export, curriculum, cluster refresh."""
