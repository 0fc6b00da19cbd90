"""`hami inspect`: a terminal view of a cluster's GPUs, read through any kubeconfig.

`collect` turns the API's Nodes and Pods into a plain model (`ClusterView`), folding them into an
engine exactly as the scheduler's cache does, so the view shows what the scheduler believes;
`render` turns the model into rich renderables (and JSON); `cli` is the command. Imported only by
`hami.cli`.
"""
