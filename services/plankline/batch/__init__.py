"""The one-machine batch pipeline over a project folder, in the seed's layout."""
