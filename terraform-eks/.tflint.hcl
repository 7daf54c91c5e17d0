# tflint's bundled Terraform rules, all of them: documented and typed variables and
# outputs, no unused declarations, pinned versions, the standard module layout.
# The AWS rule plugin would need a download, so it is not enabled.
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
