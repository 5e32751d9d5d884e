"""The Woodytoys shop, reproduced: API, front page and database, slow on purpose."""
