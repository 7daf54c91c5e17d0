# The repositories' lifecycle policy. ECR reads it so: a rule selects an image only if each
# of the rule's tag prefixes (or patterns) matches one of the image's tags, so every prefix
# and pattern gets a rule of its own; and an image that a rule selects cannot be expired by
# a rule of lower priority (a higher number).
locals {
  # Releases first. A release is a tested build tagged again, so its image still carries
  # the build's tag, and the count of builds below would expire it. These rules' count is
  # never reached: they only hold the images.
  release_rules = [for pattern in var.release_tag_patterns : {
    description = "Keep releases tagged ${pattern}"
    selection = {
      tagStatus      = "tagged"
      tagPatternList = [pattern]
      countType      = "imageCountMoreThan"
      countNumber    = 10000
    }
  }]

  untagged_rules = [{
    description = "Untagged layers left by pushes expire after a week"
    selection = {
      tagStatus   = "untagged"
      countType   = "sinceImagePushed"
      countUnit   = "days"
      countNumber = 7
    }
  }]

  # Only throwaway builds expire by count: a count over all tags would, after enough
  # pushes, delete the release production runs, and a node replacement could not pull it.
  build_rules = [for prefix in var.build_tag_prefixes : {
    description = "Keep the newest ${var.keep_build_images} builds tagged ${prefix}*"
    selection = {
      tagStatus     = "tagged"
      tagPrefixList = [prefix]
      countType     = "imageCountMoreThan"
      countNumber   = var.keep_build_images
    }
  }]

  lifecycle_policy = jsonencode({
    rules = [for i, rule in concat(local.release_rules, local.untagged_rules, local.build_rules) :
    merge(rule, { rulePriority = i + 1, action = { type = "expire" } })]
  })
}
