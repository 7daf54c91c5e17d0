resource "aws_iam_role" "this" {
  name                 = var.name
  assume_role_policy   = var.trust_policy
  max_session_duration = var.max_session_hours * 3600

  tags = var.tags
}

resource "aws_iam_role_policy" "this" {
  name   = "permissions"
  role   = aws_iam_role.this.id
  policy = var.policy
}
