"""fbench plugin: the two-stream RGB + facial-landmark detector (``two-stream-landmark``) and
`fbench data landmarks`, which computes mediapipe face-mesh landmarks once per dataset."""
