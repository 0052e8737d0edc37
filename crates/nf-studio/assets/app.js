// The studio front end (placeholder until the pages land).
