"""The one-machine batch pipeline over a project folder (raw/ segmentation/ measurements/ classification/)."""
