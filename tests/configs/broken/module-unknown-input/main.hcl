module "api" {
  source  = "./modules/api"
  release = "v1"
  relase  = "v2"
}
